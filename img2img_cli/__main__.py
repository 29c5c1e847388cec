"""``python -m img2img_cli`` runs the CLI (also what ``accelerate launch -m img2img_cli`` uses)."""

from .cli import main

if __name__ == "__main__":
    main()
