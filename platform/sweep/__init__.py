"""Ray Tune sweeps over training: a search space checked against the run config
(``spaces``), the plan of every trial (``plan``), the Tune run with one MLflow child run per
trial (``tune``), and the results table and plot (``results``)."""
