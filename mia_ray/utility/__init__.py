"""Utility of a target: DDIM samples compared with held-out pool images on a pool-trained feature net."""
