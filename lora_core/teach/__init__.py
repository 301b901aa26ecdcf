"""What the app's pages and the lessons show, computed by the library: anatomy, toy problems, the
numbers behind interview answers and claims (evidence), and claims/ and interview/ as data tables.
Everything random here draws from a local torch.Generator (seeded.py); nothing sets process-wide state."""
