"""End-to-end studies that chain the stages: the MNIST 7-vs-9 study (and, later, patches)."""
