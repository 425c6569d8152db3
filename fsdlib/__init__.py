"""fsdlib: audio tagging with noisy labels and minimal supervision (FSDKaggle2019, 4th-place method)."""

__version__ = "0.1.0"
