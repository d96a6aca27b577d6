"""minipbx: an IP-PBX written in Python."""

__version__ = "0.1.0"
