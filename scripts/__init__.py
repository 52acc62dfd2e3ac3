"""The demo's steps past the CLIs: `make demo` runs `python -m scripts.<name>`."""
