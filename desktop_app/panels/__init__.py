"""Side panels: prompt and parameters, mask tools, history."""
