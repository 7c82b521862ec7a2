"""Infrared-visible image fusion for the operator's display (M2PN); separate from the
perception backbone."""
