"""The ``retinasynth`` command: a thin click layer over the library (installed as retinasynth_cli)."""
