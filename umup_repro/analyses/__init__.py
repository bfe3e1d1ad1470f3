"""Small analyses from the authors' notes and the coordinate check."""
