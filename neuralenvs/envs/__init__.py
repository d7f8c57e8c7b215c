"""Environments: the real games (``atari``) and the dreamed ones (``dream``), and where dreams start
(``starts``). Nothing here knows a world-model family; dreams use only the ``WorldModel`` interface."""
