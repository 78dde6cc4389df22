"""pi0lab.runtime."""
