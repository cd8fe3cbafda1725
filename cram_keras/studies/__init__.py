"""Studies: the protocols behind the papers' tables, run from named
configurations by one driver (`cram_keras.studies.driver`, the script
``run_study.py``). Each module here is one ``PROTOCOL`` of a study
configuration: it trains the runs and writes the result file."""
