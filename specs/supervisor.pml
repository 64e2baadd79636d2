/*
 * Promela model of the ron-kernel Supervisor restart window, quarantine and shutdown
 * (src/ron_kernel/supervisor.py). Time is abstracted as ticks; the child crashes whenever it
 * likes, may ignore its shutdown event, and may swallow cancellation.
 *
 * Safety checked by spin (make spin):
 *   - a quarantined child is never restarted;
 *   - quarantine happens exactly when the restart needed would be the (CAP+1)-th inside the
 *     window (the child ran at most CAP+1 times inside it);
 *   - shutdown always completes: the supervisor reaches "stopped" even when the child ignores
 *     its shutdown event and swallows cancellation (it is abandoned after the grace);
 *   - no deadlock (no invalid end state).
 */

#define CAP     2      /* restart_cap */
#define WINDOW  3      /* restart_window, in ticks */
#define MAXT    6      /* ticks explored */

mtype = { RUNNING, BACKING_OFF, QUARANTINED, STOPPING, STOPPED };
mtype state = RUNNING;

byte now = 0;
byte restarts[CAP + 2];    /* tick of each restart inside the window (sliding) */
byte nrestarts = 0;        /* restarts inside the window */
byte runs = 1;             /* how many times the child started */
bool shutdown_requested = false;
bool child_alive = true;
bool abandoned = false;

bool crashed = false;

active proctype Child() {
  do
  :: atomic { state == RUNNING && !shutdown_requested && !crashed -> crashed = true }  /* crash */
  :: shutdown_requested -> break
  :: state == QUARANTINED -> break                 /* not restarted: nothing left to run */
  od;
  /* the child may drain cooperatively, ignore the shutdown event, or swallow cancellation:
     the supervisor must cope with all three */
  if
  :: child_alive = false                      /* drains and returns */
  :: skip                                     /* ignores the event / swallows cancel */
  fi
}

inline prune_window() {
  /* drop restarts older than WINDOW ticks (sliding window) */
  byte i = 0; byte j = 0;
  do
  :: i < nrestarts ->
       if
       :: now - restarts[i] < WINDOW -> restarts[j] = restarts[i]; j++
       :: else -> skip
       fi;
       i++
  :: else -> break
  od;
  nrestarts = j
}

active proctype Supervisor() {
  byte deadline;
  do
  :: atomic { crashed && state == RUNNING ->
         crashed = false;
         prune_window();
         if
         :: nrestarts >= CAP ->                  /* this restart would be the (CAP+1)-th */
              state = QUARANTINED;
              child_alive = false;
              assert(runs == CAP + 1 || now >= WINDOW)
         :: else ->
              state = BACKING_OFF;
              restarts[nrestarts] = now; nrestarts++
         fi
       }
  :: state == QUARANTINED && !shutdown_requested -> shutdown_requested = true; break
  :: state == BACKING_OFF && !shutdown_requested ->
       atomic { assert(state != QUARANTINED); state = RUNNING; runs++ }
  :: now < MAXT && !shutdown_requested -> atomic { now++ }           /* time passes */
  :: !shutdown_requested -> shutdown_requested = true; break
  od;
  /* shutdown(deadline): set the event, wait up to the deadline, cancel, abandon after grace */
  state = STOPPING;
  deadline = 2;
  do
  :: !child_alive -> break
  :: child_alive && deadline > 0 -> deadline--            /* waiting for the drain */
  :: child_alive && deadline == 0 -> abandoned = true; break   /* cancel, then grace: abandon */
  od;
  state = STOPPED
}

/* never restarted after quarantine; shutdown always reaches STOPPED */
ltl quarantine_is_final { [] ((state == QUARANTINED) -> [] (state != RUNNING && state != BACKING_OFF)) }
ltl shutdown_completes { [] (shutdown_requested -> <> (state == STOPPED)) }
