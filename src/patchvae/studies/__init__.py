"""Studies compose the stages: MNIST, patches (train, embed), analysis, compare, demo."""
