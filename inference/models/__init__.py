"""Neural network definitions and the image transforms they expect."""
