"""Building blocks shared by the world-model families (see ``blocks`` and ``reward_end``)."""
