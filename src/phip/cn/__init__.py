"""Chinese national standards shared across phip: citizen ID numbers (GB 11643) and
administrative divisions (GB/T 2260)."""
