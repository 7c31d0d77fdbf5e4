"""Results of experiments: read run records, aggregate with pandas, render tables and plots."""
