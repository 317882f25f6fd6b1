"""Hot arithmetic, compiled with Numba. One fastmath setting for the whole package.

FASTMATH is off: re-association would let results depend on the CPU's vector width, and we
promise the same bytes out for the same scenario and seed on every machine.
"""

FASTMATH = False
