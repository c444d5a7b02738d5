"""Test tools shipped with farm, so the whole pipeline (Ray included) runs on a CPU in seconds and the
real model code paths run with small random weights of the real architectures: fakes behind the
seams (fakes), synthetic clips (clips, legacy, mpeg4), random weights (weights), a local multi-node
Ray cluster (cluster), namespace hosts (netns). Import from the module that defines a name: this
package re-exports nothing, so importing one tool never imports the others (nor a cycle through
here). Production code imports only clips and weights (the demo)."""
