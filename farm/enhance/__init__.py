"""The models, torch only here: the registry of official weights (registry); a job's weights files,
where they are and their checks (weights), hashed once per node (hashes); fetching them (fetch);
reading a network's shape from its weights (arch); the library patches farm needs (patches); the
enhancer that wraps RealESRGANer and GFPGANer (enhancer, upscale, faces), and the seam where tests
plug in stand-ins (factories). Importers name the module they use: importing the registry (the
CLI's help does) must not load the enhancer."""
