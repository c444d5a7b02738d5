"""The models: the registry of official weights (registry), fetching and checking them (weights), and
the enhancer that wraps RealESRGANer and GFPGANer (enhancer, upscale, faces). torch lives here only."""
