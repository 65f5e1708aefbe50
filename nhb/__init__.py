"""nhb: joint neural-architecture and hyperparameter optimisation in JAX.

Sub-packages (dependencies point one way, see docs/protocol.md §1):
  space   the shared pytree config encoding
  data    CIFAR-10 loading, the official split, on-device augmentation and batching
  models  Linen modules (cell_net, ...)
  train   make_train(model, protocol) -> trainer.train(key, hparams, inputs, data)
  bench   NAS-HPO-Bench-II table store, builder, query API, surrogate
  search  pure init/ask/tell strategies and a simulated-time runner
"""

__version__ = "0.1.0"
