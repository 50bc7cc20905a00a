"""Prompt constants for synthetic data generation and the data-quality judge.

Edit these by hand to adapt the pipeline to your documents. Every generated or judged record
stores the hash of the prompts that made it, so changing a prompt regenerates what it affects.
"""

# ---------------------------------------------------------------------------------------------
# Generation (syntheticdatageneration.py)
# ---------------------------------------------------------------------------------------------

# ---------------------------------------------------------------------------------------------
# Judge (dataquality.py)
# ---------------------------------------------------------------------------------------------
