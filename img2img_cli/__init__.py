"""img2img-cli: Stable Diffusion image-to-image on real photos, from the command line.

Importing the package does not import torch or diffusers.
"""

__version__ = "0.1.0"
