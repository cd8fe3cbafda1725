"""`InpainterOptimizers`: the inpainter's three optimizers seen as one, as
Keras' trainers ask of `model.optimizer`."""


class InpainterOptimizers:
    """The inpainter's three optimizers seen as one, as `model.optimizer`.

    Keras' JAX trainer carries `model.optimizer.variables` through its
    stateless training steps and writes them back after each epoch; here
    that list is the generator optimizer's variables, then the local, then
    the global discriminator optimizer's (`variables`). The optimizers
    themselves stay the model's `g_optimizer`, `local_d_optimizer` and
    `global_d_optimizer` (saved under those names: this object holds no
    state of its own and is not saved). `iterations` is the number of
    training steps (the generator optimizer's counter). Callbacks that look
    for `optimizers` (`keras.callbacks.LearningRateScheduler`,
    `ReduceLROnPlateau`) set each optimizer's learning rate; there is no
    single `learning_rate`.

    Args:
        model: the compiled `CRAMInpainter`.
    """

    __slots__ = ("_model",)

    def __init__(self, model):
        self._model = model

    @property
    def optimizers(self):
        """`(g_optimizer, local_d_optimizer, global_d_optimizer)`."""
        return tuple(
            optimizer for optimizer, _ in self._model.optimizers_and_variables()
        )

    @property
    def variables(self):
        """Every variable of the three optimizers, in the order of `optimizers`."""
        return [v for optimizer in self.optimizers for v in optimizer.variables]

    @property
    def iterations(self):
        """The number of training steps: the generator optimizer's counter
        (each of the three steps once per batch)."""
        return self._model.g_optimizer.iterations

    @property
    def built(self):
        return all(optimizer.built for optimizer in self.optimizers)

    def build(self, var_list=None):
        """Builds each optimizer on its own network's variables (`var_list`,
        the model's trainable variables, is not needed)."""
        del var_list
        self._model.build_optimizers()

    @property
    def learning_rate(self):
        raise AttributeError(
            "The inpainter has three optimizers and no single learning rate: "
            "use model.g_optimizer, model.local_d_optimizer or "
            "model.global_d_optimizer (or model.optimizer.optimizers)."
        )

    def __repr__(self):
        names = ", ".join(type(o).__name__ for o in self.optimizers)
        return f"<InpainterOptimizers ({names})>"
