"""Call control: registrar, location service, authentication, security guard, B2BUA calls.

Everything here is sans-IO where it can be: the asyncio glue passes messages, their
source address and ``now``, and sends what comes back.
"""
