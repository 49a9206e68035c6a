"""Placeholder replaced below once the engines land."""
