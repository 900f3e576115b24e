// PriorityInheritanceMutex: a mutex whose holder runs at the priority of its highest waiter, for
// state that realtime threads share with idle-class ones. With a plain mutex, an idle-class
// holder preempted inside its section keeps a realtime waiter waiting until a core has nothing
// else to run (docs/architecture.md, "Scheduling").
//
// Thread-safety: a mutex. Lockable: use it with std::lock_guard and std::unique_lock, and wait
// on it with std::condition_variable_any.
#pragma once

#include <pthread.h>

#include "statesync/common/status.h"

namespace statesync {

class PriorityInheritanceMutex {
 public:
  PriorityInheritanceMutex() {
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_setprotocol(&attr, PTHREAD_PRIO_INHERIT);
    const int rc = pthread_mutex_init(&mu_, &attr);
    pthread_mutexattr_destroy(&attr);
    STATESYNC_CHECK(rc == 0, "cannot create a priority-inheritance mutex");
  }
  ~PriorityInheritanceMutex() { pthread_mutex_destroy(&mu_); }
  PriorityInheritanceMutex(const PriorityInheritanceMutex&) = delete;
  PriorityInheritanceMutex& operator=(const PriorityInheritanceMutex&) = delete;

  void lock() {
    const int rc = pthread_mutex_lock(&mu_);
    STATESYNC_CHECK(rc == 0, "a priority-inheritance mutex could not be locked");
  }
  bool try_lock() { return pthread_mutex_trylock(&mu_) == 0; }
  void unlock() { pthread_mutex_unlock(&mu_); }

 private:
  pthread_mutex_t mu_;
};

}  // namespace statesync
