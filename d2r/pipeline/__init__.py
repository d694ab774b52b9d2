"""The pipeline's bookkeeping: the results layout and each job's parameters (layout), the d2r files each job runs
(sources), and the build records that decide what is current (records)."""
