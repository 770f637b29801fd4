"""Code generation: loop IR to C and CUDA source (printers and Jinja2 templates)."""
