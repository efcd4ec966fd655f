"""Rich renderables for the terminal: tables, panels and charts built from results and
diagnostics. Pure functions that return renderables; they never print."""
