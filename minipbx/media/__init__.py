"""Media the PBX speaks itself: RTP/RTCP, G.711, DTMF, prompts and recordings.

The packet and media code here is sans-IO (DESIGN.md): bytes, samples and a monotonic
``now`` come in; packets, samples, events and the next deadline go out. Sockets, clocks
and randomness (SSRCs, initial sequence numbers) belong to the asyncio glue.
"""
