"""pi0lab.train."""
