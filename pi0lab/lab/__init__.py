"""pi0lab.lab."""
