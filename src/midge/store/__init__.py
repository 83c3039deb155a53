"""The persistence seam: what the broker keeps across restarts, behind one small interface."""
