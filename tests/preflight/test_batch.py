"""A submit's many inputs as (input, output) pairs: folders, globs, an output template, and each
mistake a user makes with them, named before anything is queued."""

from __future__ import annotations

import fsspec
import pytest

from farm.batch import BatchItem, expand_inputs
from farm.errors import InputError, UsageError


def touch(tmp_path, *names: str) -> None:
    for name in names:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")


def test_a_season_folder_a_glob_and_a_file_in_order(tmp_path):
    """A season folder of DVD rips (with its subtitles and a sub-folder beside them), a glob of phone
    clips and one file also in the folder: one item per video, folder and glob sorted, the file given
    twice counted once, outputs named from the template."""
    touch(tmp_path, "s1/e2.VOB", "s1/e1.vob", "s1/e1.srt", "s1/extras/x.mkv", "phone/b.mp4", "phone/a.mp4", "phone/a.txt")
    got = expand_inputs([str(tmp_path / "s1"), str(tmp_path / "phone" / "*.mp4"), str(tmp_path / "s1" / "e1.vob")],
                        str(tmp_path / "out" / "{parent}-{stem}_x4.{ext}.mkv"))
    assert got == [
        BatchItem(str(tmp_path / "s1" / "e1.vob"), str(tmp_path / "out" / "s1-e1_x4.vob.mkv")),
        BatchItem(str(tmp_path / "s1" / "e2.VOB"), str(tmp_path / "out" / "s1-e2_x4.VOB.mkv")),
        BatchItem(str(tmp_path / "phone" / "a.mp4"), str(tmp_path / "out" / "phone-a_x4.mp4.mkv")),
        BatchItem(str(tmp_path / "phone" / "b.mp4"), str(tmp_path / "out" / "phone-b_x4.mp4.mkv")),
    ]


def test_a_single_file_keeps_the_plain_output_and_a_folder_output_names_each(tmp_path):
    """`farm submit a.mp4 -o a_x4.mkv` means what it always did; `-o out/` names each output
    `{stem}_x4.mkv` (a folder per video for PNG frames)."""
    touch(tmp_path, "a.mp4", "b.mp4")
    (tmp_path / "out").mkdir()
    a, b = str(tmp_path / "a.mp4"), str(tmp_path / "b.mp4")
    assert expand_inputs([a], str(tmp_path / "a_x4.mkv")) == [BatchItem(a, str(tmp_path / "a_x4.mkv"))]
    assert expand_inputs([a, b], str(tmp_path / "out")) == [BatchItem(a, str(tmp_path / "out" / "a_x4.mkv")),
                                                          BatchItem(b, str(tmp_path / "out" / "b_x4.mkv"))]
    assert expand_inputs([a], str(tmp_path / "frames") + "/", codec="png") == [BatchItem(a, str(tmp_path / "frames" / "a_x4"))]


def test_inputs_on_object_storage(tmp_path):
    """A bucket of captures: the glob is matched against the bucket's listing."""
    fs = fsspec.filesystem("memory")
    for name in ("caps/t1.avi", "caps/t2.avi", "caps/notes.txt"):
        fs.pipe(f"/farm-batch-test/{name}", b"")
    got = expand_inputs(["memory://farm-batch-test/caps/*.avi"], "memory://farm-batch-test/out/{stem}.mkv")
    assert [(i.input.rsplit("/", 2)[-2:], i.output.rsplit("/", 2)[-2:]) for i in got] == [
        (["caps", "t1.avi"], ["out", "t1.mkv"]), (["caps", "t2.avi"], ["out", "t2.mkv"])]


@pytest.mark.parametrize(("args", "output", "error", "message"), [
    (["a.mp4", "b.mp4"], "out.mkv", UsageError, "-o must name each output: use a template such as 'out/{stem}_x4.mkv'"),
    (["s1"], "out.mkv", UsageError, "-o must name each output: use a template such as 'out/{stem}_x4.mkv'"),
    (["a.mp4"], "{title}.mkv", UsageError, "-o uses {title}; an output template knows {stem}, {name}, {ext}, {parent}"),
    (["a.mp4", "s1/a.mp4"], "{stem}.mkv", UsageError, "<a> and <s1a> would both write <out>; add {parent} or {name} to -o"),
    (["a.mp4", "b.mp4"], "{stem}.mp4", UsageError, "the output of <a> is <a>, one of the inputs; pick another -o"),
    (["missing.mp4"], "{stem}.mkv", InputError, "input missing.mp4 does not exist; check the path"),
    (["*.avi"], "{stem}.mkv", InputError, "*.avi matches no file; check the pattern (quote it so that the shell does not expand it)"),
    (["empty"], "{stem}.mkv", InputError, "folder empty holds no video file (looked for .mp4, .m4v, .mkv"),
])
def test_mistakes_are_named_with_the_fix(tmp_path, monkeypatch, args, output, error, message):
    """Each mistake gets one line naming it and what to do instead."""
    monkeypatch.chdir(tmp_path)
    touch(tmp_path, "a.mp4", "b.mp4", "s1/a.mp4", "s1/b.mp4")
    (tmp_path / "empty").mkdir()
    for token, path in (("<a>", "a.mp4"), ("<s1a>", "s1/a.mp4"), ("<out>", "a.mkv")):
        message = message.replace(token, str(tmp_path / path))
    with pytest.raises(error) as info:
        expand_inputs(args, output)
    assert str(info.value).startswith(message)


def test_a_folder_resubmitted_with_its_outputs_hidden_files_and_a_write_under_way(tmp_path):
    """The same `farm submit season1/ -o 'season1/{stem}_x4.mkv'` again, to resume: last run's
    outputs, a Mac's `._e1.vob` and an output still being written are in the folder; only the two
    episodes are inputs, with the same outputs as the first time."""
    touch(tmp_path, "s1/e1.vob", "s1/e2.vob", "s1/e1_x4.mkv", "s1/._e1.vob", "s1/e2_x4.tmp-1a2b3c4d.mkv")
    template = str(tmp_path / "s1" / "{stem}_x4.mkv")
    expected = [BatchItem(str(tmp_path / "s1" / "e1.vob"), str(tmp_path / "s1" / "e1_x4.mkv")),
                BatchItem(str(tmp_path / "s1" / "e2.vob"), str(tmp_path / "s1" / "e2_x4.mkv"))]
    assert expand_inputs([str(tmp_path / "s1")], template) == expected
    assert expand_inputs([str(tmp_path / "s1" / "*")], template) == expected
