// An exclusive advisory lock between processes (and between objects of one process): flock(2) on
// a lock file next to the thing it guards. The holder writes its pid, what it does and since when
// into the file, so a process that finds the lock taken can say who holds it. The kernel drops the
// lock when its holder exits or is killed, so a stale lock file never blocks anyone. The holder
// removes the file when it releases the lock; acquire() re-checks after flock(2) that the file it
// locked is still the one under the name, so two processes can never both hold one lock.
// Core code: nothing here prints; waiting is reported through LockWait::onWait.
#pragma once

#include "util/progress.h"

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>

namespace moeatlas {

// Who holds a lock, as the holder wrote it into the lock file.
struct LockHolder {
    int64_t pid = 0; // 0 when unknown (the file was empty: the holder had not written it yet)
    std::string purpose; // what the holder does (its command line unless it said otherwise)
    std::string since; // local time it took the lock, "YYYY-MM-DD HH:MM:SS"
    // "pid 123 (moeatlas fisher a.h5) since 2024-05-01 10:00:00", or "an unknown process".
    std::string describe() const;
};

// How acquire() waits for a lock another holder has.
struct LockWait {
    // Longest wait; then acquire() throws InputError naming the lock file and the holder.
    // Zero: fail at once when the lock is taken.
    std::chrono::milliseconds timeout { std::chrono::minutes(10) };
    // Written into the lock file for the messages of others; empty: this process's command line.
    std::string purpose;
    // Called when the lock is found taken, then about once a second while waiting, with the
    // holder and the time waited so far. Returning false stops the wait: acquire() throws Cancelled.
    std::function<bool(const LockHolder& holder, std::chrono::milliseconds waited)> onWait;
};

class FileLock {
public:
    FileLock() = default;
    ~FileLock();
    FileLock(FileLock&& other) noexcept;
    FileLock& operator=(FileLock&& other) noexcept;
    FileLock(const FileLock&) = delete;
    FileLock& operator=(const FileLock&) = delete;

    // Takes the lock on `lockPath` (created when missing), waiting as `wait` says. `what` names
    // the guarded thing in the timeout message ("another update of a.h5"). Throws InputError when
    // the directory does not allow a lock file or the wait times out, Cancelled when onWait says stop.
    static FileLock acquire(const std::filesystem::path& lockPath, const LockWait& wait, const std::string& what);

    // Removes the lock file and releases the lock; nothing when not held.
    void release() noexcept;
    bool held() const { return m_fd >= 0; }
    const std::filesystem::path& path() const { return m_path; }

    // The holder recorded in `lockPath` (pid 0 when the file is missing or empty).
    static LockHolder readHolder(const std::filesystem::path& lockPath);

private:
    int m_fd = -1;
    std::filesystem::path m_path;
};

// A wait that reports every tick through `progress` (stage "waiting: another update holds ...: <holder>",
// done = seconds waited) and gives up, with Cancelled, when `progress` returns false or `stop` asks.
LockWait reportingLockWait(ProgressFn progress, const StopToken* stop);

} // namespace moeatlas
