"""Editing methods, one module each, all driven by an EditSession."""
