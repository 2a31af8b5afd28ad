"""One router per resource: recommend (recommend, score, similar), models, health."""
