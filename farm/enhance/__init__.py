"""The models, torch only here: registry, weights (and hashes), fetch, arch, patches, the enhancer
(enhancer, upscale, faces) and the seam for stand-ins (factories). Importers name the module they
use: importing the registry (the CLI's help does) must not load the enhancer."""
