"""What the dashboard's pages show and recompute: views, plots, live sliders, the report."""
