"""The analysis notebooks, shipped as package data so that ``recsys-hyper evaluate --notebook``
finds them when the package is installed from a wheel (see README.md beside this file)."""
