"""Result documents: the GeoJSON Feature we store and call back with, and its QuPath form."""
