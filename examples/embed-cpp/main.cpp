// herald's C API from C++, with RAII: a Job joins the job in its constructor and
// leaves it (collectively) in its destructor; a Task owns its handle, so a task
// is waited for or released exactly once, whatever path the code takes.
//
// Every rank runs this program. Rank 0 loads the example plugin (whose
// constructor registers its tasks on every node) and runs example.wordcount on
// every rank.
#include <dlfcn.h>

#include <cstdio>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "herald.h"

namespace herald {

// Thrown for any failed herald call, with herald's reason.
class Error : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

// Why the last call on this thread returned handle 0 (or failed).
inline std::string last_error() {
    char text[512] = "";
    herald_wait(0, text, sizeof text);
    return text;
}

// A launched task. Move-only; the destructor releases a task nobody waited for.
class Task {
  public:
    Task(uint32_t node, const std::string &name, const std::string &args)
        : handle_(herald_launch(node, name.c_str(), args.data(), args.size())) {
        if (handle_ == 0) throw Error("launching " + name + ": " + last_error());
    }
    Task(Task &&other) noexcept : handle_(std::exchange(other.handle_, 0)) {}
    Task(const Task &) = delete;
    Task &operator=(const Task &) = delete;
    ~Task() {
        if (handle_ != 0) herald_task_release(handle_);
    }

    // The task's result bytes; waits, and consumes the handle.
    std::string result() {
        void *bytes = nullptr;
        size_t len = 0;
        char error[512] = "";
        int code = herald_task_wait(std::exchange(handle_, 0), &bytes, &len, error, sizeof error);
        if (code != HERALD_OK) throw Error(error);
        std::unique_ptr<void, void (*)(void *)> owned(bytes, herald_free);
        return std::string(static_cast<const char *>(owned.get()), len);
    }

  private:
    herald_handle handle_;
};

// This process's part in the job: herald_init in the constructor,
// herald_finalize (collective) in the destructor.
class Job {
  public:
    Job(int &argc, char **&argv) {
        if (herald_init(&argc, &argv) != HERALD_OK) throw Error("herald_init: " + last_error());
    }
    Job(const Job &) = delete;
    Job &operator=(const Job &) = delete;
    ~Job() {
        if (herald_finalize() != HERALD_OK) std::fprintf(stderr, "herald_finalize failed\n");
    }
    uint32_t rank() const { return herald_node_id(); }
    uint32_t size() const { return herald_node_count(); }
};

}  // namespace herald

int main(int argc, char **argv) {
    try {
        herald::Job job(argc, argv);
        if (job.rank() == 0) {
            if (argc < 2 || !dlopen(argv[1], RTLD_NOW)) throw herald::Error("usage: embed-cpp PLUGIN.so");
            std::vector<herald::Task> tasks;
            for (uint32_t node = 0; node < job.size(); node++)
                tasks.emplace_back(node, "example.wordcount", "one two three");
            for (uint32_t node = 0; node < job.size(); node++) {
                std::string words = tasks[node].result();
                std::printf("node %u: %s words\n", node, words.c_str());
                if (words != "3") throw herald::Error("wrong answer from node " + std::to_string(node));
            }
            std::printf("embed-cpp: every rank answered\n");
        }
        std::fflush(stdout);
        return 0;  // ~Job: every rank leaves the job together
    } catch (const herald::Error &error) {
        std::fprintf(stderr, "embed-cpp: %s\n", error.what());
        return 1;
    }
}
