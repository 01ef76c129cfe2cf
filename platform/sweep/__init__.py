"""Ray Tune sweeps over training: a search space checked against the run config
(``spaces``), the plan of every trial (``plan``), the Tune run with one MLflow child run per
trial (``tune``), the results table and plot (``results``), and the command line of
``jobs/sweep.py`` (``launch``)."""
