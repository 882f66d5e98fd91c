// libFuzzer target for the calibration readers: the first input byte picks the reader, the rest is
// the file it reads.
//   0: text JSONL (field "text")   1: chat messages JSONL   2: input_ids JSONL, vocabulary 1000
//   3: input_ids JSONL, no bound   4: plain text, blank-line documents   5: plain text, whole file
//   6: format detection of a .jsonl file, then its reader
// Only InputError may escape; every input_ids document read under a vocabulary lies inside it.
#include "fuzz_support.h"
#include "text/calibration.h"
#include "util/error.h"

#include <cstddef>
#include <cstdint>
#include <cstdlib>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size)
{
    if (size == 0)
        return 0;
    const auto path = moeatlas::fuzz::writeFile("calibration.jsonl", moeatlas::fuzz::asText(data + 1, size - 1));
    try {
        switch (data[0] % 7) {
        case 0:
            (void)moeatlas::readTextJsonl(path, "text");
            break;
        case 1:
            (void)moeatlas::readMessagesJsonl(path);
            break;
        case 2:
            for (const auto& doc : moeatlas::readInputIdsJsonl(path, 1000))
                for (const int32_t id : doc)
                    if (id < 0 || id >= 1000)
                        std::abort();
            break;
        case 3:
            (void)moeatlas::readInputIdsJsonl(path, 0);
            break;
        case 4:
            (void)moeatlas::readTextFile(path, false);
            break;
        case 5:
            (void)moeatlas::readTextFile(path, true);
            break;
        default: {
            const moeatlas::TextOptions options;
            const std::string format = moeatlas::detectFormat(path, options);
            if (moeatlas::isTextFormat(format))
                (void)moeatlas::readTextDocuments(path, format, options);
            else
                (void)moeatlas::readInputIdsJsonl(path, 0);
            break;
        }
        }
    } catch (const moeatlas::InputError&) {
    }
    return 0;
}
