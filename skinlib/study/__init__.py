"""The book's experiments at scale: profiles, studies of runs, training many runs at once, results bundles
and the GPU window that fills one."""
