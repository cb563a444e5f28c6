"""Small helpers: seeding, atomic files, progress bars."""
