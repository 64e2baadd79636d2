/*
 * Promela model of the ron-kernel Bus (src/ron_kernel/_bus.py): one shared ring of CAP slots,
 * a cursor per receiver, publish never blocks, Lagged(n) then continue from the oldest
 * retained message, Closed only after close + drain.
 *
 * Safety checked by spin (make spin):
 *   - every receiver sees messages in publish order, without duplicates;
 *   - what a receiver reads plus what it is told it missed equals everything published
 *     (no silent loss);
 *   - the last message before close (Shutdown) is never lost, even by a lagging receiver;
 *   - no deadlock: every process reaches its end (no invalid end state).
 */

#define CAP 2          /* ring capacity */
#define N   4          /* messages published; message N is "Shutdown" */
#define R   2          /* receivers */

byte ring[CAP];
byte tail = 0;         /* messages written so far; the next goes to ring[tail % CAP] */
bool closed = false;

byte got[R];           /* messages each receiver read */
byte missed[R];        /* messages each receiver was told it missed (sum of Lagged.missed) */
bool saw_shutdown[R];

active proctype Publisher() {
  byte seq = 1;
  do
  :: seq <= N ->
       atomic { ring[tail % CAP] = seq; tail++ }   /* publish: O(1), never waits */
       seq++
  :: seq > N -> break
  od;
  closed = true                                   /* close(): receivers drain, then Closed */
}

active [R] proctype Receiver() {
  byte id = _pid - 1;
  byte next = 0;       /* cursor: index of the next message to read */
  byte last = 0;       /* last sequence number read, for the order check */
  byte msg;
  do
  :: atomic {
       (next < tail || closed) ->                /* recv() parks until one of these holds */
       if
       :: next < tail ->
            if
            :: tail - next > CAP ->               /* fell behind: Lagged(missed) */
                 missed[id] = missed[id] + (tail - CAP - next);
                 next = tail - CAP
            :: else -> skip
            fi;
            msg = ring[next % CAP];
            next++;
            assert(msg > last);                   /* publish order, no duplicates */
            assert(msg == next);                  /* the cursor names exactly this message */
            last = msg;
            got[id]++;
            if
            :: msg == N -> saw_shutdown[id] = true
            :: else -> skip
            fi
       :: else -> break                           /* closed and drained: Closed */
       fi
     }
  od;
  assert(got[id] + missed[id] == N);              /* nothing lost without being counted */
  assert(saw_shutdown[id])                        /* Shutdown reaches every receiver */
}
