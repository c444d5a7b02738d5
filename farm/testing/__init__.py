"""Test tools shipped with farm, so the whole pipeline (Ray included) runs on a CPU in seconds and real
model code runs on small random weights. Import from the module that defines a name: this package
re-exports nothing. Production code may import only clips, weights and footage (the demo)."""
