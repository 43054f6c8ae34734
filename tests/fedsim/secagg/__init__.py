"""Tests of fedsim.secagg (a package, so test module names cannot collide with other folders)."""
