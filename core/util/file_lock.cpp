#include "util/file_lock.h"

#include "util/error.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fcntl.h>
#include <fstream>
#include <sys/file.h>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>
#include <utility>

namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace moeatlas {

namespace {

// This process's command line from /proc (arguments joined by spaces), shortened to 300 bytes.
std::string ownCommandLine()
{
    std::ifstream in("/proc/self/cmdline", std::ios::binary);
    std::string raw((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    while (!raw.empty() && raw.back() == '\0')
        raw.pop_back();
    std::replace(raw.begin(), raw.end(), '\0', ' ');
    if (raw.size() > 300)
        raw = raw.substr(0, 297) + "...";
    return raw;
}

std::string localTimeNow()
{
    const std::time_t now = std::time(nullptr);
    std::tm local {};
    localtime_r(&now, &local);
    char text[32];
    std::strftime(text, sizeof text, "%Y-%m-%d %H:%M:%S", &local);
    return text;
}

// One line per field; newlines in the purpose would end it early, so they become spaces.
std::string holderText(const std::string& purpose)
{
    std::string what = purpose.empty() ? ownCommandLine() : purpose;
    std::replace(what.begin(), what.end(), '\n', ' ');
    return "pid=" + std::to_string(::getpid()) + "\nsince=" + localTimeNow() + "\npurpose=" + what + "\n";
}

LockHolder parseHolder(const std::string& text)
{
    LockHolder holder;
    size_t begin = 0;
    while (begin < text.size()) {
        size_t end = text.find('\n', begin);
        if (end == std::string::npos)
            end = text.size();
        const std::string line = text.substr(begin, end - begin);
        begin = end + 1;
        const size_t eq = line.find('=');
        if (eq == std::string::npos)
            continue;
        const std::string key = line.substr(0, eq), value = line.substr(eq + 1);
        if (key == "pid") {
            try {
                holder.pid = std::stoll(value);
            } catch (const std::exception&) {
                holder.pid = 0;
            }
        } else if (key == "since") {
            holder.since = value;
        } else if (key == "purpose") {
            holder.purpose = value;
        }
    }
    return holder;
}

std::string readAll(int fd)
{
    std::string text;
    char buffer[4096];
    off_t offset = 0;
    for (;;) {
        const ssize_t n = ::pread(fd, buffer, sizeof buffer, offset);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0 || text.size() > 16384)
            break;
        text.append(buffer, static_cast<size_t>(n));
        offset += n;
    }
    return text;
}

bool writeAll(int fd, const std::string& text)
{
    if (::ftruncate(fd, 0) != 0)
        return false;
    size_t done = 0;
    while (done < text.size()) {
        const ssize_t n = ::pwrite(fd, text.data() + done, text.size() - done, static_cast<off_t>(done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        done += static_cast<size_t>(n);
    }
    return true;
}

// True when `fd` is still the file named `path`: a holder removes the lock file on release, so a
// file opened before that removal and locked after it is no longer the lock.
bool stillNamed(int fd, const fs::path& path)
{
    struct stat opened { };
    struct stat named { };
    if (::fstat(fd, &opened) != 0 || ::stat(path.c_str(), &named) != 0)
        return false;
    return opened.st_dev == named.st_dev && opened.st_ino == named.st_ino;
}

} // namespace

std::string LockHolder::describe() const
{
    if (pid <= 0)
        return "an unknown process";
    std::string text = "pid " + std::to_string(pid);
    if (!purpose.empty())
        text += " (" + purpose + ")";
    if (!since.empty())
        text += " since " + since;
    return text;
}

FileLock::~FileLock()
{
    release();
}

FileLock::FileLock(FileLock&& other) noexcept
    : m_fd(std::exchange(other.m_fd, -1))
    , m_path(std::move(other.m_path))
{
}

FileLock& FileLock::operator=(FileLock&& other) noexcept
{
    if (this != &other) {
        release();
        m_fd = std::exchange(other.m_fd, -1);
        m_path = std::move(other.m_path);
    }
    return *this;
}

FileLock FileLock::acquire(const fs::path& lockPath, const LockWait& wait, const std::string& what)
{
    using Clock = std::chrono::steady_clock;
    const Clock::time_point start = Clock::now();
    Clock::time_point lastReport {};
    bool reported = false;
    for (;;) {
        // O_CLOEXEC: a child process started while we hold the lock must not keep it alive.
        int fd = ::open(lockPath.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
        if (fd < 0 && errno == EACCES) // left by another user's killed update: flock needs no write access
            fd = ::open(lockPath.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
            throw InputError(lockPath.string() + ": cannot create the lock file for " + what + ": "
                + std::strerror(errno) + " (the directory must be writable)");
        int status = 0;
        do
            status = ::flock(fd, LOCK_EX | LOCK_NB);
        while (status != 0 && errno == EINTR);
        if (status == 0) {
            if (!stillNamed(fd, lockPath)) { // released and removed between our open and flock
                ::close(fd);
                continue;
            }
            // Who we are, for the messages of those who wait; a failed write only makes them vaguer.
            (void)writeAll(fd, holderText(wait.purpose));
            FileLock lock;
            lock.m_fd = fd;
            lock.m_path = lockPath;
            return lock;
        }
        const int error = errno;
        if (error != EWOULDBLOCK) {
            ::close(fd);
            throw InputError(lockPath.string() + ": cannot lock the lock file for " + what + ": " + std::strerror(error)
                + " (does this file system support flock?)");
        }
        const LockHolder holder = parseHolder(readAll(fd));
        ::close(fd);

        const Clock::time_point now = Clock::now();
        const auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(now - start);
        if (waited >= wait.timeout) {
            std::string message = lockPath.string() + ": " + what + " holds this lock: " + holder.describe();
            if (wait.timeout > 0ms) {
                char seconds[32];
                std::snprintf(seconds, sizeof seconds, "%.*f", waited < 10s ? 1 : 0, waited.count() / 1000.0);
                message += "; gave up after waiting " + std::string(seconds) + " s";
            }
            throw InputError(message
                + ". Run again when it has finished (the lock is released when that process "
                  "ends, even if it is killed)");
        }
        if (wait.onWait && (!reported || now - lastReport >= 1s)) {
            reported = true;
            lastReport = now;
            if (!wait.onWait(holder, waited))
                throw Cancelled();
        }
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(wait.timeout - waited);
        std::this_thread::sleep_for(std::min<std::chrono::milliseconds>(50ms, left));
    }
}

void FileLock::release() noexcept
{
    if (m_fd < 0)
        return;
    // Removed while still locked: whoever opened it meanwhile finds it unnamed after its flock
    // (stillNamed) and starts over on a fresh file.
    ::unlink(m_path.c_str());
    ::close(m_fd);
    m_fd = -1;
}

LockHolder FileLock::readHolder(const fs::path& lockPath)
{
    const int fd = ::open(lockPath.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return {};
    LockHolder holder = parseHolder(readAll(fd));
    ::close(fd);
    return holder;
}

LockWait reportingLockWait(ProgressFn progress, const StopToken* stop)
{
    LockWait wait;
    wait.onWait = [progress = std::move(progress), stop](const LockHolder& holder, std::chrono::milliseconds waited) {
        const bool go = !progress
            || progress(
                Progress { "waiting: another update holds the atlas: " + holder.describe(), waited.count() / 1000, 0 });
        return go && !(stop && stop->stopRequested());
    };
    return wait;
}

} // namespace moeatlas
