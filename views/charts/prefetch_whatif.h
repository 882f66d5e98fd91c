// The Prefetch tab's what-if panel: hardware preset, GPU expert cache, link bandwidth, policy, eviction,
// predictor, lookahead and budget; every change (slider drags debounced) re-runs the offload simulator on
// the first sequences of each domain off the GUI thread (WhatIfRunner: a stale run is stopped) and shows
// the TPOT breakdown (compute vs stall, next to the on-demand baseline at the same cache and link) and the
// stall per MoE layer.
#pragma once

#include "charts/prefetch_sim.h"

#include <QWidget>

#include <memory>

class QChart;
class QComboBox;
class QLabel;
class QSlider;
class QSpinBox;
class QTimer;

namespace moeatlas::views {

struct AtlasSnapshot;

// Seconds in the unit that reads best for `largest` (ms, or µs below 1 ms): the factor and the unit.
std::pair<double, QString> timeUnit(double largest);

class PrefetchWhatIf : public QWidget {
    Q_OBJECT
public:
    explicit PrefetchWhatIf(QWidget* parent = nullptr);

    // A new atlas (null: none): ranges from its model, predictors from its /prefetch; runs once.
    void setSnapshot(const std::shared_ptr<const AtlasSnapshot>& snapshot);
    // Predictors evaluated with speculative execution: simulated speculative too (the quality panel).
    void setSpeculativePredictors(std::vector<Predictor> predictors);

    WhatIfSettings settings() const;
    WhatIfRunner* runner() const { return m_runner; }
    // The run on show (null before the first); the text of the TPOT line; the error of the last run.
    std::shared_ptr<const WhatIfOutcome> shownOutcome() const { return m_shown; }
    QString tpotText() const;
    QString errorText() const { return m_error; }
    // Debounce of the controls before a run (default 150 ms; tests may set 0).
    void setDebounceInterval(int ms);

    QComboBox* presetBox() const { return m_preset; }
    QComboBox* cacheModeBox() const { return m_cacheMode; }
    QSlider* cacheSlider() const { return m_cache; }
    QSlider* bandwidthSlider() const { return m_bandwidth; }
    QComboBox* policyBox() const { return m_policy; }
    QComboBox* evictionBox() const { return m_eviction; }
    QComboBox* predictorBox() const { return m_predictor; }
    QSpinBox* lookaheadBox() const { return m_lookahead; }
    QSpinBox* budgetBox() const { return m_budget; }
    QSpinBox* sequencesBox() const { return m_sequences; }
    // TPOT: a stacked bar per run ("on-demand", the policy), sets "compute" and "stall". Stall per layer:
    // sets "<policy>" and "on-demand", one category per MoE layer (decoder index).
    QChart* tpotChart() const { return m_tpotChart; }
    QChart* stallChart() const { return m_stallChart; }

Q_SIGNALS:
    void outcomeShown();

protected:
    // Runs only while shown: a change made while the tab is hidden runs when it is shown.
    void showEvent(QShowEvent* event) override;

private:
    void schedule(); // a control changed: run after the debounce
    void run();
    void show(const WhatIfOutcome& outcome);
    void presetChanged();
    void cacheModeChanged();
    void updateLabels();

    WhatIfRunner* m_runner;
    QTimer* m_debounce;
    std::shared_ptr<const AtlasSnapshot> m_snapshot;
    std::shared_ptr<const WhatIfOutcome> m_shown;
    std::vector<Predictor> m_speculative;
    QString m_error;
    bool m_dirty = false; // a change while hidden
    int m_topK = 1;
    int m_experts = 1;

    QComboBox* m_preset;
    QComboBox* m_cacheMode;
    QSlider* m_cache;
    QLabel* m_cacheLabel;
    QSlider* m_bandwidth;
    QLabel* m_bandwidthLabel;
    QComboBox* m_policy;
    QComboBox* m_eviction;
    QComboBox* m_predictor;
    QSpinBox* m_lookahead;
    QSpinBox* m_budget;
    QSpinBox* m_sequences;
    QLabel* m_scope;
    QLabel* m_tpot;
    QChart* m_tpotChart;
    QChart* m_stallChart;
};

} // namespace moeatlas::views
