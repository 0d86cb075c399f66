"""The command line and the config-file jobs behind it (``funcgrad optimize | evaluate | show | compare``).

The only layer that imports everything, strategies by entry point included.
"""
